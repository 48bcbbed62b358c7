//! A namespace's `Cluster`s and `Route`s, with the Secrets they name and the members of the
//! inventory its routes name ([`Members`], from `ClusterProfile`s), rendered as the files
//! of the routing configuration Secret its sidecars mount at `/etc/mca`: `config.yaml` and
//! each cluster's credential files beside it (`<cluster>.token`, `<cluster>.ca.crt`,
//! `<cluster>.tls.crt`, `<cluster>.tls.key`), so credentials stay out of the YAML and a
//! rotated token reaches the sidecars as a changed file.
//!
//! Pure: no API calls. Every resource gets a verdict; one with a problem is left out of the
//! configuration (and routes naming a cluster left out fail too), so one mistake never takes
//! the namespace's whole configuration down. Each piece is checked with the parser `mca run`
//! uses, so what is published is what the sidecars accept.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use kube::ResourceExt as _;
use serde_json::{Value, json};

use super::crd::{Cluster, Route};
use crate::config::{Config, LOCAL, ParseError, Schema};

/// Where the sidecars mount the configuration Secret.
pub const MOUNT: &str = "/etc/mca";
/// The configuration's key in the Secret.
pub const CONFIG_KEY: &str = "config.yaml";

/// The rendered files and a verdict per resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Secret keys and their contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// By cluster name: `Ok`, or what is wrong.
    pub clusters: BTreeMap<String, Result<(), String>>,
    /// By inventory member name: `Ok`, or what is wrong.
    pub members: BTreeMap<String, Result<(), String>>,
    /// By route name: `Ok`, or what is wrong.
    pub routes: BTreeMap<String, Result<(), String>>,
}

/// The credential Secrets the namespace's Clusters name, by name: their data, or why it may
/// not be used.
pub type Secrets = BTreeMap<String, Result<BTreeMap<String, Vec<u8>>, String>>;

/// A cluster of the inventory, as the operator resolved it for one namespace.
#[derive(Clone, PartialEq, Eq)]
pub struct Member {
    /// Its API server.
    pub server: String,
    /// The name in the server's certificate, when not the URL's host.
    pub tls_server_name: Option<String>,
    /// Its labels (the profile's properties).
    pub labels: BTreeMap<String, String>,
    /// Its credential files by key: `token` or `tls.crt` and `tls.key`, and `ca.crt`.
    pub credential: BTreeMap<String, Vec<u8>>,
    /// Why it must take no requests, when its manager says so.
    pub unhealthy: Option<String>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("server", &self.server)
            .field("labels", &self.labels)
            .field("credential", &self.credential.keys().collect::<Vec<_>>())
            .field("unhealthy", &self.unhealthy)
            .finish_non_exhaustive()
    }
}

/// The inventory members a namespace's routes name, by name: each resolved, or why it cannot
/// be used.
pub type Members = BTreeMap<String, Result<Member, String>>;

/// Renders `clusters`, `routes` and `members` with the credentials in `secrets`.
pub fn render(
    clusters: &[Cluster],
    routes: &[Route],
    members: &Members,
    secrets: &Secrets,
) -> Rendered {
    let mut rendered = Rendered {
        files: BTreeMap::new(),
        clusters: BTreeMap::new(),
        members: BTreeMap::new(),
        routes: BTreeMap::new(),
    };
    let mut entries = Vec::new();
    let mut accept = |verdict: Result<Entry, String>| {
        verdict.and_then(|(entry, files)| {
            check(&json!({"clusters": [entry]}))?;
            entries.push(entry);
            rendered.files.extend(files);
            Ok(())
        })
    };
    let mut cluster_verdicts = BTreeMap::new();
    for cluster in clusters {
        let name = cluster.name_any();
        let verdict = if members.contains_key(&name) {
            Err(format!(
                "a ClusterProfile of the inventory is named {name} too: rename this Cluster"
            ))
        } else {
            accept(cluster_entry(cluster, secrets))
        };
        cluster_verdicts.insert(name, verdict);
    }
    let mut member_verdicts = BTreeMap::new();
    for (name, member) in members {
        let verdict = if cluster_verdicts.contains_key(name) {
            Err(format!(
                "a Cluster in this namespace is named {name} too: rename the Cluster"
            ))
        } else {
            accept(member.clone().and_then(|member| member_entry(name, member)))
        };
        member_verdicts.insert(name.clone(), verdict);
    }
    rendered.clusters = cluster_verdicts;
    rendered.members = member_verdicts;
    let ready: BTreeSet<&str> = rendered
        .clusters
        .iter()
        .chain(&rendered.members)
        .filter(|(_, v)| v.is_ok())
        .map(|(n, _)| n.as_str())
        .collect();

    let mut ordered: Vec<&Route> = routes.iter().collect();
    ordered.sort_by_key(|r| (r.spec.priority, r.name_any()));
    let defaults: Vec<String> = ordered
        .iter()
        .filter(|r| r.spec.default)
        .map(|r| r.name_any())
        .collect();
    let mut rules = Vec::new();
    let mut default_route = None;
    for route in ordered {
        let name = route.name_any();
        let verdict = (|| {
            if route.spec.default && defaults.len() > 1 {
                return Err(format!(
                    "more than one default route: {}",
                    defaults.join(", ")
                ));
            }
            for cluster in &route.spec.to.clusters {
                if cluster != LOCAL && !ready.contains(cluster.as_str()) {
                    let known = rendered.clusters.get(cluster);
                    return Err(match known.or_else(|| rendered.members.get(cluster)) {
                        Some(Err(why)) => format!("cluster {cluster} is not ready: {why}"),
                        _ => format!("no Cluster {cluster} in this namespace"),
                    });
                }
            }
            let target = serde_json::to_value(&route.spec.to).expect("a target serializes");
            let clusters: Vec<&Value> = entries.iter().collect();
            if route.spec.default {
                check(&json!({"clusters": clusters, "defaultRoute": target}))?;
                default_route = Some(target);
            } else {
                let rule = json!({
                    "name": name,
                    "match": serde_json::to_value(&route.spec.matches).expect("serializes"),
                    "to": target,
                });
                check(&json!({"clusters": clusters, "routes": [rule]}))?;
                rules.push(rule);
            }
            Ok(())
        })();
        rendered.routes.insert(name, verdict);
    }
    let mut config = json!({"clusters": entries, "routes": rules});
    if let Some(default_route) = default_route {
        config["defaultRoute"] = default_route;
    }
    let yaml = serde_saphyr::to_string(&config).expect("a configuration serializes");
    rendered
        .files
        .insert(CONFIG_KEY.to_owned(), yaml.into_bytes());
    rendered
}

/// A cluster's configuration entry and its credential files (Secret key, contents).
type Entry = (Value, Vec<(String, Vec<u8>)>);

/// The configuration entry for `cluster` and its credential files.
fn cluster_entry(cluster: &Cluster, secrets: &Secrets) -> Result<Entry, String> {
    let name = cluster.name_any();
    if name == LOCAL {
        return Err(format!(
            "{LOCAL} is the cluster the pod runs in; choose another name"
        ));
    }
    let spec = &cluster.spec;
    let secret_name = &spec.credentials_secret;
    let secret = secrets
        .get(secret_name)
        .ok_or_else(|| format!("Secret {secret_name} not found"))?
        .as_ref()
        .map_err(Clone::clone)?;
    bound_to(secret_name, secret, &spec.server)?;
    let mut entry = json!({"name": name, "server": spec.server});
    let token = secret.contains_key("token");
    let certificate = secret.contains_key("tls.crt") && secret.contains_key("tls.key");
    match (token, certificate) {
        (true, true) => {
            return Err(format!(
                "Secret {secret_name} has both token and tls.crt/tls.key: keep one credential"
            ));
        }
        (false, false) => {
            return Err(format!(
                "Secret {secret_name} has no token, nor tls.crt and tls.key"
            ));
        }
        (true, false) if !secret.contains_key("ca.crt") => {
            return Err(format!(
                "Secret {secret_name} has a token but no ca.crt: MCA would send the token to \
                 any server the system's roots vouch for"
            ));
        }
        (true, false) | (false, true) => {}
    }
    let credential = if token {
        ["token", "ca.crt"].as_slice()
    } else {
        ["tls.crt", "tls.key", "ca.crt"].as_slice()
    };
    let files = credential_files(
        &name,
        credential
            .iter()
            .filter_map(|key| Some((*key, secret.get(*key)?.clone()))),
        &mut entry,
    );
    if let Some(server_name) = &spec.tls_server_name {
        entry["tlsServerName"] = json!(server_name);
    }
    if !spec.labels.is_empty() {
        entry["labels"] = json!(spec.labels);
    }
    if let Some(weight) = spec.weight {
        entry["weight"] = json!(weight);
    }
    if let Some(health) = &spec.health {
        entry["health"] = serde_json::to_value(health).expect("serializes");
    }
    Ok((entry, files))
}

/// The configuration entry for the inventory member `name` and its credential files.
fn member_entry(name: &str, member: Member) -> Result<Entry, String> {
    if name == LOCAL {
        return Err(format!(
            "{LOCAL} is the cluster the pod runs in: a ClusterProfile of that name is not used"
        ));
    }
    if member.credential.contains_key("token") && !member.credential.contains_key("ca.crt") {
        return Err(
            "its plugin gives a token but the profile has no certificate-authority-data: MCA \
             would send the token to any server the system's roots vouch for"
                .to_owned(),
        );
    }
    let mut entry = json!({"name": name, "server": member.server});
    let files = credential_files(name, member.credential, &mut entry);
    if let Some(server_name) = member.tls_server_name {
        entry["tlsServerName"] = json!(server_name);
    }
    if !member.labels.is_empty() {
        entry["labels"] = json!(member.labels);
    }
    if let Some(why) = member.unhealthy {
        entry["unhealthy"] = json!(why);
    }
    Ok((entry, files))
}

/// Names the credential files of cluster `name` (`<name>.<key>`) in its configuration
/// `entry`, and returns them.
fn credential_files(
    name: &str,
    credential: impl IntoIterator<Item = (impl AsRef<str>, Vec<u8>)>,
    entry: &mut Value,
) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (key, data) in credential {
        let key = key.as_ref();
        let field = match key {
            "token" => "tokenFile",
            "ca.crt" => "certificateAuthority",
            "tls.crt" => "clientCertificate",
            "tls.key" => "clientKey",
            _ => continue,
        };
        let file = format!("{name}.{key}");
        entry[field] = json!(file);
        files.push((file, data));
    }
    files
}

/// The key of a credential Secret naming the one API server its credential is for.
pub const SERVER_KEY: &str = "server";

/// Refuses a credential Secret that is not for `server`: the Secret's owner says where its
/// credential may go ([`SERVER_KEY`]), so a Cluster's author, who need not be able to read
/// it, cannot point it at a server of their own.
fn bound_to(
    secret_name: &str,
    secret: &BTreeMap<String, Vec<u8>>,
    server: &str,
) -> Result<(), String> {
    let canonical = |url: &str| url.trim().trim_end_matches('/').to_owned();
    let Some(stated) = secret.get(SERVER_KEY) else {
        return Err(format!(
            "Secret {secret_name} does not say which server its credential is for: add the key \
             {SERVER_KEY} with this Cluster's spec.server ({server})"
        ));
    };
    let stated = String::from_utf8_lossy(stated);
    if canonical(&stated) != canonical(server) {
        return Err(format!(
            "Secret {secret_name} is for the server {}, not this Cluster's {server}",
            stated.trim()
        ));
    }
    Ok(())
}

/// Checks a (partial) configuration with `mca run`'s parser.
fn check(config: &Value) -> Result<(), String> {
    let yaml = serde_saphyr::to_string(config).expect("a configuration serializes");
    match Config::parse(&yaml, Path::new(MOUNT), Schema::Restricted) {
        Ok(_) => Ok(()),
        Err(ParseError::Syntax(message)) => Err(message),
        Err(ParseError::Invalid(problems)) => Err(problems
            .iter()
            .map(|p| format!("{}: {}", p.at, p.message))
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;
    use crate::operator::crd::{ClusterSpec, Match, RouteSpec, Target};

    fn cluster(name: &str, secret: &str) -> Cluster {
        Cluster {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: ClusterSpec {
                server: format!("https://{name}.example:6443"),
                credentials_secret: secret.to_owned(),
                tls_server_name: None,
                labels: [("region".to_owned(), name.to_owned())].into(),
                weight: None,
                health: None,
            },
            status: None,
        }
    }

    fn route(name: &str, priority: i32, namespaces: &[&str], to: &[&str]) -> Route {
        Route {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: RouteSpec {
                priority,
                matches: Match {
                    namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
                    ..Match::default()
                },
                to: Target {
                    clusters: to.iter().map(|c| (*c).to_owned()).collect(),
                    strategy: (to.len() > 1).then(|| "failover".to_owned()),
                    cluster_selector: None,
                },
                default: false,
            },
            status: None,
        }
    }

    fn secrets() -> Secrets {
        let data = |pairs: &[(&str, &str)]| {
            Ok(pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect())
        };
        let east = "https://east.example:6443";
        let west = "https://west.example:6443/";
        [
            (
                "east-creds".to_owned(),
                data(&[
                    ("server", east),
                    ("token", "east-token"),
                    ("ca.crt", "EAST CA"),
                ]),
            ),
            (
                "west-creds".to_owned(),
                data(&[("server", west), ("tls.crt", "CERT"), ("tls.key", "KEY")]),
            ),
            (
                "both".to_owned(),
                data(&[
                    ("server", "https://ambiguous.example:6443"),
                    ("token", "t"),
                    ("tls.crt", "c"),
                    ("tls.key", "k"),
                ]),
            ),
            (
                "plain-creds".to_owned(),
                data(&[
                    ("server", "http://plain.example"),
                    ("tls.crt", "c"),
                    ("tls.key", "k"),
                ]),
            ),
            (
                "unbound".to_owned(),
                data(&[("token", "t"), ("ca.crt", "CA")]),
            ),
            (
                "no-ca".to_owned(),
                data(&[("server", "https://no-ca.example:6443"), ("token", "t")]),
            ),
        ]
        .into()
    }

    fn config(rendered: &Rendered) -> Config {
        let yaml = std::str::from_utf8(&rendered.files[CONFIG_KEY]).unwrap();
        Config::parse(yaml, Path::new(MOUNT), Schema::Restricted)
            .expect("the published configuration parses")
    }

    #[test]
    fn clusters_and_routes_become_the_configuration_and_its_credential_files() {
        let mut default = route("everything-else", 0, &[], &["east"]);
        default.spec.default = true;
        let rendered = render(
            &[cluster("east", "east-creds"), cluster("west", "west-creds")],
            &[
                route("z-shared", 1, &["shared"], &["east", "west"]),
                route("a-team-b", 1, &["team-b"], &["west"]),
                route("first", 0, &["team-a"], &["local"]),
                default,
            ],
            &Members::new(),
            &secrets(),
        );
        assert!(
            rendered.clusters.values().all(Result::is_ok),
            "{rendered:?}"
        );
        assert!(rendered.routes.values().all(Result::is_ok), "{rendered:?}");
        let keys: Vec<&str> = rendered.files.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "config.yaml",
                "east.ca.crt",
                "east.token",
                "west.tls.crt",
                "west.tls.key"
            ]
        );
        assert_eq!(rendered.files["east.token"], b"east-token");
        let yaml = std::str::from_utf8(&rendered.files[CONFIG_KEY]).unwrap();
        assert!(
            !yaml.contains("east-token"),
            "a credential in the YAML: {yaml}"
        );
        assert!(yaml.contains("tokenFile: east.token"), "{yaml}");
        let config = config(&rendered);
        let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["local", "east", "west"]);
        // By priority, then name.
        let rules: Vec<&str> = config.router.rules().iter().map(|r| &*r.name).collect();
        assert_eq!(rules, ["first", "a-team-b", "z-shared"]);
    }

    #[test]
    fn a_broken_resource_is_left_out_with_its_reason_and_the_rest_is_published() {
        let mut bad_server = cluster("plain", "plain-creds");
        bad_server.spec.server = "http://plain.example".to_owned();
        let mut bad_selector = route("bad-selector", 0, &["x"], &["east"]);
        bad_selector.spec.matches.label_selector = Some("tier in (".to_owned());
        let mut second_default = route("d2", 0, &[], &["east"]);
        second_default.spec.default = true;
        let mut first_default = route("d1", 0, &[], &["east"]);
        first_default.spec.default = true;
        // A Cluster author pointing a credential at a server it is not for.
        let mut elsewhere = cluster("east-2", "east-creds");
        elsewhere.spec.server = "https://harvest.example:6443".to_owned();
        let rendered = render(
            &[
                cluster("east", "east-creds"),
                elsewhere,
                cluster("unbound", "unbound"),
                cluster("no-ca", "no-ca"),
                cluster("nosecret", "missing"),
                cluster("ambiguous", "both"),
                cluster("local", "east-creds"),
                bad_server,
            ],
            &[
                route("good", 0, &["a"], &["east"]),
                route("to-missing", 0, &["b"], &["nosecret"]),
                route("to-unknown", 0, &["c"], &["mars"]),
                bad_selector,
                first_default,
                second_default,
            ],
            &Members::new(),
            &secrets(),
        );
        let why = |map: &BTreeMap<String, Result<(), String>>, name: &str| {
            map[name].clone().err().unwrap_or_default()
        };
        assert!(rendered.clusters["east"].is_ok());
        assert!(why(&rendered.clusters, "nosecret").contains("Secret missing not found"));
        assert!(why(&rendered.clusters, "ambiguous").contains("keep one credential"));
        assert!(why(&rendered.clusters, "local").contains("choose another name"));
        assert_eq!(
            why(&rendered.clusters, "east-2"),
            "Secret east-creds is for the server https://east.example:6443, not this Cluster's \
             https://harvest.example:6443"
        );
        assert!(
            why(&rendered.clusters, "unbound").contains("does not say which server"),
            "{rendered:?}"
        );
        assert!(why(&rendered.clusters, "no-ca").contains("a token but no ca.crt"));
        assert!(
            why(&rendered.clusters, "plain").contains("https"),
            "{rendered:?}"
        );
        assert!(rendered.routes["good"].is_ok());
        assert!(why(&rendered.routes, "to-missing").contains("cluster nosecret is not ready"));
        assert!(why(&rendered.routes, "to-unknown").contains("no Cluster mars"));
        assert!(
            why(&rendered.routes, "bad-selector").contains("labelSelector"),
            "{rendered:?}"
        );
        assert!(why(&rendered.routes, "d1").contains("more than one default route: d1, d2"));
        let config = config(&rendered);
        let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["local", "east"]);
        assert_eq!(config.router.rules().len(), 1);
    }

    fn member(name: &str, credential: &[(&str, &str)]) -> Member {
        Member {
            server: format!("https://{name}.fleet.example:6443"),
            tls_server_name: Some(format!("api.{name}")),
            labels: [("topology.kubernetes.io/region".to_owned(), name.to_owned())].into(),
            credential: credential
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            unhealthy: None,
        }
    }

    #[test]
    fn inventory_members_are_rendered_beside_the_clusters_and_conflicts_are_refused() {
        let mut down = member("south", &[("token", "south-token"), ("ca.crt", "SOUTH CA")]);
        down.unhealthy =
            Some("ClusterProfile fleet/south reports ControlPlaneHealthy=False".into());
        let members: Members = [
            (
                "north".to_owned(),
                Ok(member(
                    "north",
                    &[("token", "north-token"), ("ca.crt", "NORTH CA")],
                )),
            ),
            ("south".to_owned(), Ok(down)),
            (
                "mtls".to_owned(),
                Ok(member("mtls", &[("tls.crt", "CERT"), ("tls.key", "KEY")])),
            ),
            ("no-ca".to_owned(), Ok(member("no-ca", &[("token", "t")]))),
            (
                "broken".to_owned(),
                Err(
                    "no credential for ClusterProfile fleet/broken: x failed (exit status: 1)"
                        .to_owned(),
                ),
            ),
            (
                "east".to_owned(),
                Ok(member("east", &[("token", "t"), ("ca.crt", "CA")])),
            ),
        ]
        .into();
        let mut selected = route("by-region", 0, &["c"], &[]);
        selected.spec.to.cluster_selector = Some("topology.kubernetes.io/region=south".to_owned());
        let rendered = render(
            &[cluster("east", "east-creds")],
            &[
                route("to-north", 0, &["a"], &["north", "south"]),
                route("to-broken", 0, &["b"], &["broken"]),
                route("to-east", 0, &["d"], &["east"]),
                selected,
            ],
            &members,
            &secrets(),
        );
        let why = |map: &BTreeMap<String, Result<(), String>>, name: &str| {
            map[name].clone().err().unwrap_or_default()
        };
        assert!(rendered.members["north"].is_ok() && rendered.members["mtls"].is_ok());
        assert!(
            rendered.members["south"].is_ok(),
            "unhealthy, still published"
        );
        assert!(why(&rendered.members, "no-ca").contains("no certificate-authority-data"));
        assert!(
            why(&rendered.clusters, "east")
                .contains("a ClusterProfile of the inventory is named east too")
        );
        assert!(
            why(&rendered.members, "east")
                .contains("a Cluster in this namespace is named east too")
        );
        assert!(rendered.routes["to-north"].is_ok(), "{rendered:?}");
        assert!(rendered.routes["by-region"].is_ok(), "{rendered:?}");
        assert_eq!(
            why(&rendered.routes, "to-broken"),
            "cluster broken is not ready: no credential for ClusterProfile fleet/broken: x failed \
             (exit status: 1)"
        );
        assert!(why(&rendered.routes, "to-east").contains("cluster east is not ready"));
        assert_eq!(rendered.files["north.token"], b"north-token");
        assert_eq!(rendered.files["north.ca.crt"], b"NORTH CA");
        assert_eq!(rendered.files["mtls.tls.key"], b"KEY");
        assert!(
            !rendered.files.contains_key("east.token"),
            "neither of the conflicting two"
        );
        let yaml = std::str::from_utf8(&rendered.files[CONFIG_KEY]).unwrap();
        assert!(
            !yaml.contains("north-token"),
            "a credential in the YAML: {yaml}"
        );
        let config = config(&rendered);
        let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["local", "mtls", "north", "south"]);
        let north = &config.clusters[2];
        assert_eq!(north.labels["topology.kubernetes.io/region"], "north");
        assert!(yaml.contains("tlsServerName: api.north"), "{yaml}");
        assert!(
            yaml.contains("unhealthy: ClusterProfile fleet/south reports"),
            "{yaml}"
        );
    }
}
