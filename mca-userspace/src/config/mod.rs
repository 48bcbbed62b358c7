//! `mca run --config FILE`: the clusters MCA routes to and the routes that choose among them.
//!
//! ```yaml
//! clusters:
//!   - name: east                                  # a DNS label; `local` is MCA's own cluster
//!     server: https://203.0.113.10:6443
//!     certificateAuthority: /etc/mca/east/ca.crt  # or certificateAuthorityData (base64 PEM)
//!     tokenFile: /etc/mca/east/token              # or token, clientCertificate + clientKey,
//!                                                 # exec, or kubeconfig: {path, context}
//!     labels: {region: east}
//! routes:                                         # in order; the first that matches wins
//!   - name: team-b
//!     match: {namespaces: ["team-b", "b-*"], verbs: [get, list, watch]}
//!     to: {clusters: [east]}
//! defaultRoute: {clusters: [local]}
//! ```
//!
//! The file is read into [`file`] types (unknown keys are errors), then checked as a whole:
//! every problem is reported with its line, not just the first. What comes out is the list of
//! clusters with their credentials in kube's own form (a kubeconfig, so every credential kind
//! goes through kube's loading and auth code) and the compiled [`Router`].

mod check;
mod credentials;
mod file;
mod routes;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use self::check::Checker;
use crate::{
    route::{Candidate, Router},
    upstream::Source,
};

/// The name of the cluster MCA runs in (or that `--kubeconfig` names).
pub const LOCAL: &str = "local";

/// A checked configuration.
#[derive(Debug)]
pub struct Config {
    /// The clusters; the first is always [`LOCAL`].
    pub clusters: Vec<ClusterSpec>,
    /// The routes, referring to clusters by their index here.
    pub router: Router,
    /// Whether discovery documents are merged across clusters.
    pub merged_discovery: bool,
}

/// One cluster, ready to connect to.
#[derive(Debug)]
pub struct ClusterSpec {
    /// Its name.
    pub name: String,
    /// Where its configuration comes from; `None` for [`LOCAL`], which `mca run`'s own
    /// options describe.
    pub source: Option<Source>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Health checks; `None` without a configuration file, where the one cluster has no
    /// alternative to fail over to.
    pub health: Option<HealthSpec>,
}

/// How a cluster's health is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// The path to GET.
    pub path: String,
    /// Between probes.
    pub interval: Duration,
    /// Per probe.
    pub timeout: Duration,
    /// Consecutive failures that take the cluster out.
    pub unhealthy_after: u32,
    /// Consecutive successes that bring it back.
    pub healthy_after: u32,
    /// Why the configuration says the cluster is down (its `unhealthy`): it stays out of
    /// its routes, whatever the probes say.
    pub reported_down: Option<String>,
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            path: "/readyz".to_owned(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            unhealthy_after: 3,
            healthy_after: 2,
            reported_down: None,
        }
    }
}

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid YAML for this schema; the message shows where.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line and a snippet.
        message: String,
    },
    /// The file parses but says something impossible; every problem is listed.
    #[error("{path}: {} problem(s):\n{}", problems.len(), Problems(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each problem with its location.
        problems: Vec<Problem>,
    },
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the entry it concerns.
    pub line: u64,
    /// Where in the document: `routes[0] (team-b): match.labelSelector`.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.at, self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl std::fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// Which settings a configuration may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schema {
    /// Everything: `mca run` started by hand, by whoever may run commands as MCA anyway.
    #[default]
    Full,
    /// What a Secret writer may be trusted with, for injected sidecars (`--config-restricted`)
    /// and the operator's output: no `exec` (it would run a command in MCA), no `kubeconfig`
    /// (its own exec and files), and file settings only as plain names of files beside the
    /// configuration (an absolute `tokenFile` would send any file MCA can read, its own
    /// ServiceAccount token included, to a server of the writer's choosing).
    Restricted,
}

impl Config {
    /// Reads and checks the file at `path`. Relative file names inside it are resolved
    /// against its directory.
    pub fn load(path: &Path, schema: Schema) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, schema).map_err(|error| match error {
            ParseError::Syntax(message) => Error::Syntax {
                path: path.to_owned(),
                message,
            },
            ParseError::Invalid(problems) => Error::Invalid {
                path: path.to_owned(),
                problems,
            },
        })
    }

    /// [`load`](Self::load), except that a missing file is `None`: a configuration
    /// published later, like the operator's Secret mounted `optional`, which exists only
    /// once the namespace has a `Cluster` or `Route`.
    pub fn load_if_present(path: &Path, schema: Schema) -> Result<Option<Self>, Error> {
        match Self::load(path, schema) {
            Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            loaded => loaded.map(Some),
        }
    }

    /// The configuration without a file: everything to [`LOCAL`].
    pub fn local_only() -> Self {
        Self {
            clusters: vec![ClusterSpec {
                name: LOCAL.to_owned(),
                source: None,
                labels: BTreeMap::new(),
                health: None,
            }],
            router: Router::single(Candidate {
                id: 0,
                name: LOCAL.to_owned(),
                weight: 1,
            }),
            merged_discovery: false,
        }
    }

    /// Parses and checks `text` against `schema`; `base` resolves relative file names.
    pub fn parse(text: &str, base: &Path, schema: Schema) -> Result<Self, ParseError> {
        let file: file::File =
            serde_saphyr::from_str(text).map_err(|error| ParseError::Syntax(error.to_string()))?;
        let mut checker = Checker {
            base,
            schema,
            problems: Vec::new(),
        };
        let config = checker.config(file);
        if checker.problems.is_empty() {
            Ok(config)
        } else {
            Err(ParseError::Invalid(checker.problems))
        }
    }
}

/// `mca check-config FILE`: checks the file, then loads every cluster's credentials the way
/// `mca run` would, without connecting anywhere (missing or unreadable certificate, key and
/// kubeconfig files show up here). Returns a one-line summary, or every problem found.
pub async fn check(path: &Path, schema: Schema) -> Result<String, Vec<String>> {
    let config = Config::load(path, schema).map_err(|error| match error {
        Error::Invalid { path, problems } => problems
            .iter()
            .map(|p| format!("{}:{}: {}: {}", path.display(), p.line, p.at, p.message))
            .collect(),
        other => vec![other.to_string()],
    })?;
    let limits = crate::upstream::Limits {
        max_connections: 1,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        keep_alive: crate::upstream::KeepAlive::CLIENT_GO,
    };
    let mut problems = Vec::new();
    for cluster in &config.clusters {
        if let Some(source) = &cluster.source
            && let Err(error) = crate::upstream::Upstream::load(source, limits).await
        {
            problems.push(format!(
                "{}: cluster {}: {error}",
                path.display(),
                cluster.name
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    Ok(format!(
        "{}: OK: {} cluster(s) ({}), {} route(s)",
        path.display(),
        names.len(),
        names.join(", "),
        config.router.rules().len()
    ))
}

/// Why text is not a configuration.
#[derive(Debug)]
pub enum ParseError {
    /// Not YAML of this schema: the parser's message.
    Syntax(String),
    /// Impossible settings.
    Invalid(Vec<Problem>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
clusters:
  - name: east
    server: https://203.0.113.10:6443
    certificateAuthority: east/ca.crt
    tlsServerName: api.east.example
    token: "east-token"
    labels: {region: east}
    weight: 3
    health: {path: /readyz, interval: 5s, timeout: 2s, unhealthyAfter: 3, healthyAfter: 2}
  - name: west
    server: https://203.0.113.20:6443
    certificateAuthorityData: "LS0tLS1CRUdJTi0tLS0t"
    exec:
      command: /usr/local/bin/west-token
      args: ["--audience", "west"]
      env: [{name: REGION, value: west}]
  - name: lab
    kubeconfig: {path: /etc/mca/lab.kubeconfig, context: lab-admin}
routes:
  - name: team-b
    match:
      namespaces: ["team-b", "b-*"]
      resources: ["configmaps", "apps/deployments", "pods/log"]
      verbs: ["get", "list", "watch"]
      labelSelector: "tier=web"
      originalDestination: ["198.51.100.7:443"]
    to: {clusters: [east, west], strategy: failover}
  - name: lab
    match: {namespaces: ["lab-*"]}
    to: {clusters: [lab]}
defaultRoute: {clusters: [local]}
discovery: merged
"#;

    #[test]
    fn only_a_missing_file_may_be_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        assert!(
            Config::load_if_present(&path, Schema::Full)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            Config::load(&path, Schema::Full),
            Err(Error::Read { .. })
        ));
        std::fs::write(&path, "routes: []\n").unwrap();
        assert!(
            Config::load_if_present(&path, Schema::Full)
                .unwrap()
                .is_some()
        );
        std::fs::write(&path, "routes: 7\n").unwrap();
        assert!(matches!(
            Config::load_if_present(&path, Schema::Full),
            Err(Error::Syntax { .. })
        ));
        // A directory where the file should be is a mistake, not an absence.
        assert!(Config::load_if_present(dir.path(), Schema::Full).is_err());
    }

    fn problems(text: &str) -> Vec<String> {
        problems_in(text, Schema::Full)
    }

    fn problems_in(text: &str, schema: Schema) -> Vec<String> {
        match Config::parse(text, Path::new("/etc/mca"), schema) {
            Ok(_) => Vec::new(),
            Err(ParseError::Invalid(problems)) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(ParseError::Syntax(message)) => vec![message],
        }
    }

    #[test]
    fn the_documented_example_is_valid() {
        let config = Config::parse(EXAMPLE, Path::new("/etc/mca"), Schema::Full).unwrap();
        let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["local", "east", "west", "lab"]);
        assert_eq!(config.router.rules().len(), 2);
        assert!(config.merged_discovery);
        assert_eq!(config.clusters[1].labels["region"], "east");
        assert_eq!(config.clusters[1].health, Some(HealthSpec::default()));
        let Some(Source::Inline(east)) = &config.clusters[1].source else {
            panic!("east is inline");
        };
        let cluster = east.clusters[0].cluster.as_ref().unwrap();
        // Relative files are resolved against the configuration's directory.
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/etc/mca/east/ca.crt")
        );
        assert_eq!(cluster.tls_server_name.as_deref(), Some("api.east.example"));
        let Some(Source::Inline(west)) = &config.clusters[2].source else {
            panic!("west is inline");
        };
        let exec = west.auth_infos[0]
            .auth_info
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap();
        assert_eq!(exec.command.as_deref(), Some("/usr/local/bin/west-token"));
        assert_eq!(
            exec.api_version.as_deref(),
            Some("client.authentication.k8s.io/v1")
        );
        assert_eq!(exec.env.as_ref().unwrap()[0]["value"], "west");
        assert!(matches!(
            &config.clusters[3].source,
            Some(Source::Kubeconfig { path: Some(path), context: Some(context) })
                if path == Path::new("/etc/mca/lab.kubeconfig") && context == "lab-admin"
        ));
    }

    #[test]
    fn the_deployment_example_is_valid() {
        let example = include_str!("../../../deploy/examples/mca-config.yaml");
        let config = Config::parse(example, Path::new("/etc/mca"), Schema::Full).unwrap();
        assert_eq!(config.clusters.len(), 5);
        assert_eq!(config.router.rules().len(), 3);
    }

    #[test]
    fn an_empty_file_routes_everything_to_local() {
        let config = Config::parse("{}", Path::new("."), Schema::Full).unwrap();
        assert_eq!(config.clusters.len(), 1);
        assert!(config.router.rules().is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = r#"
clusters:
  - name: local
    server: https://a:6443
    token: t
  - name: East
    server: http://b:6443
  - name: west
    server: https://c:6443
    token: t
    tokenFile: /t
    clientKey: /k
    weight: 0
    health: {interval: 5d, healthyAfter: 0}
  - name: west
    server: https://d:6443
    token: t
routes:
  - name: r
    match: {namespaces: ["Bad_NS"], resources: ["a/b/c/d"], verbs: [read], labelSelector: "tier in web", originalDestination: ["nowhere"]}
    to: {clusters: [nowhere, west, west]}
  - name: r
    match: {}
    to: {clusters: [local, west]}
  - name: s
    match: {}
    to: {clusters: [local], strategy: random}
  - name: f
    match: {}
    to: {clusters: [local], strategy: fanout}
defaultRoute: {clusters: []}
discovery: everything
"#;
        let found = problems(text);
        let expected = [
            "line 3: clusters[0] (local): \"local\" is MCA's own cluster",
            "line 6: clusters[1] (East): name: \"East\" is not a DNS label",
            "line 6: clusters[1] (East): server \"http://b:6443\": credentials are never sent in clear",
            "line 6: clusters[1] (East): no credentials",
            "line 8: clusters[2] (west): weight: must be at least 1",
            "line 8: clusters[2] (west): one kind of credentials, please: token, tokenFile, clientCertificate",
            "line 8: clusters[2] (west): clientCertificate and clientKey go together",
            "line 8: clusters[2] (west): health.interval:",
            "line 8: clusters[2] (west): health.healthyAfter must be at least 1",
            "line 19: routes[0] (r): match.namespaces:",
            "line 19: routes[0] (r): match.resources:",
            "line 19: routes[0] (r): match.verbs:",
            "line 19: routes[0] (r): match.labelSelector: expected '(' after in/notin",
            "line 19: routes[0] (r): match.originalDestination:",
            "line 19: routes[0] (r): to: clusters: no cluster named \"nowhere\"",
            "line 19: routes[0] (r): to: clusters: \"west\" is listed twice",
            "line 19: routes[0] (r): to: several clusters need a strategy",
            "line 22: routes[1] (r): another route has this name",
            "line 22: routes[1] (r): to: several clusters need a strategy",
            "line 25: routes[2] (s): to: strategy \"random\" is not one of: single, failover",
            "line 28: routes[3] (f): to: strategy \"fanout\" is not one of",
            "line 31: defaultRoute: clusters: name at least one cluster",
            "line 32: discovery: \"everything\" is neither defaultRoute nor merged",
        ];
        for want in expected {
            assert!(
                found.iter().any(|problem| problem.starts_with(want)),
                "missing {want:?} in:\n{}",
                found.join("\n")
            );
        }
        // The second "west" is reported too (as a duplicate) once the first one is valid.
        assert_eq!(
            problems(
                "clusters:\n  - {name: w, server: 'https://a', token: t}\n  - {name: w, server: 'https://b', token: t}\n"
            ),
            ["line 3: clusters[1] (w): a cluster named \"w\" is already defined"]
        );
        assert_eq!(found.len(), expected.len(), "{}", found.join("\n"));
    }

    #[test]
    fn a_cluster_selector_takes_the_clusters_it_selects_after_those_named() {
        let text = r#"
clusters:
  - {name: east-1, server: "https://a", token: t, labels: {region: east}}
  - {name: west, server: "https://b", token: t, labels: {region: west}}
  - {name: east-2, server: "https://c", token: t, labels: {region: east}, unhealthy: "ControlPlaneHealthy=False"}
routes:
  - name: east
    match: {}
    to: {clusters: [east-2], clusterSelector: "region=east", strategy: failover}
"#;
        let config = Config::parse(text, Path::new("."), Schema::Full).unwrap();
        let target = &config.router.rules()[0].target;
        let names: Vec<&str> = target
            .clusters()
            .map(|id| config.clusters[id].name.as_str())
            .collect();
        assert_eq!(
            names,
            ["east-2", "east-1"],
            "named first, then selected, once"
        );
        let east_2 = &config.clusters[3];
        assert_eq!(
            east_2.health.as_ref().unwrap().reported_down.as_deref(),
            Some("ControlPlaneHealthy=False")
        );
        assert_eq!(
            config.clusters[1].health.as_ref().unwrap().reported_down,
            None
        );

        let wrong = r#"
clusters:
  - {name: down, server: "https://a", token: t, labels: {region: north}, unhealthy: " "}
  - {name: east, server: "https://b", token: t, labels: {region: east}}
routes:
  - {name: none, match: {}, to: {clusterSelector: "region=north"}}
  - {name: empty, match: {}, to: {clusterSelector: ""}}
  - {name: bad, match: {}, to: {clusterSelector: "region in east"}}
  - {name: nothing, match: {}, to: {}}
  - {name: named, match: {}, to: {clusters: [east], clusterSelector: "region=east"}}
"#;
        let found = problems(wrong);
        let expected = [
            "line 3: clusters[0] (down): unhealthy: say why the cluster is down",
            "line 6: routes[0] (none): to: clusterSelector \"region=north\" selects no other cluster",
            "line 7: routes[1] (empty): to: clusterSelector: select by at least one label",
            "line 8: routes[2] (bad): to: clusterSelector: expected '(' after in/notin",
            "line 9: routes[3] (nothing): to: clusters: name at least one cluster, or select",
            "line 10: routes[4] (named): to: clusterSelector \"region=east\" selects no other cluster",
        ];
        for want in expected {
            assert!(
                found.iter().any(|problem| problem.starts_with(want)),
                "missing {want:?} in:\n{}",
                found.join("\n")
            );
        }
        assert_eq!(found.len(), expected.len(), "{}", found.join("\n"));
    }

    #[test]
    fn unknown_keys_and_bad_yaml_are_syntax_errors_with_a_line() {
        let found = problems("clusters:\n  - name: east\n    sever: https://a\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("sever") && found[0].contains('3'),
            "{}",
            found[0]
        );
        let found = problems("routes: [\n");
        assert_eq!(found.len(), 1);
        let found = problems("defaultRoute: {clusters: local}\n");
        assert_eq!(found.len(), 1, "a string is not a list");
    }

    #[test]
    fn kubeconfig_excludes_inline_settings() {
        let found =
            problems("clusters:\n  - name: k\n    kubeconfig: {path: k.yaml}\n    token: t\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("kubeconfig gives the server"),
            "{found:?}"
        );
    }

    #[test]
    fn the_restricted_schema_allows_no_commands_and_only_files_beside_it() {
        let cluster = |settings: &str| {
            format!("clusters:\n  - name: k\n    server: https://k.example\n{settings}")
        };
        // As the operator publishes it: plain names.
        let published = cluster(
            "    certificateAuthority: k.ca.crt\n    clientCertificate: k.tls.crt\n    clientKey: k.tls.key\n",
        );
        assert_eq!(
            problems_in(&published, Schema::Restricted),
            Vec::<String>::new()
        );
        assert!(problems_in(&cluster("    token: t\n"), Schema::Restricted).is_empty());
        for (settings, named) in [
            ("    exec: {command: /bin/sh}\n", "exec: running a command"),
            (
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
                "tokenFile",
            ),
            ("    tokenFile: ../real-sa/token\n", "tokenFile"),
            ("    tokenFile: sub/token\n", "tokenFile"),
            ("    tokenFile: ./token\n", "tokenFile"),
            (
                "    token: t\n    certificateAuthority: /etc/ssl/ca.pem\n",
                "certificateAuthority",
            ),
            (
                "    clientCertificate: /c\n    clientKey: k\n",
                "clientCertificate",
            ),
            ("    clientCertificate: c\n    clientKey: ..\n", "clientKey"),
        ] {
            let text = cluster(settings);
            let found = problems_in(&text, Schema::Restricted);
            assert!(
                found
                    .iter()
                    .any(|p| p.contains(named) && p.contains("--config-restricted")),
                "{settings}: {found:?}"
            );
            // The full schema takes what its files hold.
            assert!(problems_in(&text, Schema::Full).is_empty(), "{settings}");
        }
        let kubeconfig = "clusters:\n  - name: k\n    kubeconfig: {path: k.yaml}\n";
        let found = problems_in(kubeconfig, Schema::Restricted);
        assert!(
            found.iter().any(|p| p.contains("kubeconfig: not allowed")),
            "{found:?}"
        );
    }
}
