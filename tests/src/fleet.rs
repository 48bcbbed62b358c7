//! Several clusters behind one MCA: three test API servers in a pod sandbox — `local` (MCA's
//! in-cluster configuration), `east` (a token in the configuration file) and `west` (a token
//! file) — each with its own CA and token, and MCA started with a routing configuration. The
//! servers' records tell which cluster got which request, and with which credential.

use crate::{
    apiserver::{ApiServer, Options},
    harness::{Env, Mca, NAMESPACE, REAL_TOKEN, succeed, tests_binary},
    sandbox::Pod,
};

/// The token east accepts.
pub const EAST_TOKEN: &str = "east-token-1";
/// The token west accepts.
pub const WEST_TOKEN: &str = "west-token-1";

/// MCA in a pod with three clusters.
pub struct Fleet {
    /// MCA, the pod, and the local cluster's server.
    pub env: Env,
    /// The cluster `east`.
    pub east: ApiServer,
    /// The cluster `west`.
    pub west: ApiServer,
}

/// The configuration file: east (a token) and west (a token file) with `cluster_settings`
/// (YAML lines) added to each, then `routes`.
pub fn config(east: &ApiServer, west: &ApiServer, cluster_settings: &str, routes: &str) -> String {
    format!(
        "clusters:\n\
         \x20 - name: east\n\
         \x20   server: https://{}\n\
         \x20   certificateAuthority: east-ca.crt\n\
         \x20   token: {EAST_TOKEN}\n\
         {cluster_settings}\
         \x20 - name: west\n\
         \x20   server: https://{}\n\
         \x20   certificateAuthority: west-ca.crt\n\
         \x20   tokenFile: west-token\n\
         {cluster_settings}\
         {routes}",
        east.addr(),
        west.addr()
    )
}

impl Fleet {
    /// Starts the three servers (local holding the pod `web` in [`NAMESPACE`]) and MCA with
    /// `routes`, `cluster_settings` added to east and west, and west configured by
    /// `west_options`. The configuration is `mca.yaml` in the pod's directory.
    pub fn start(
        routes: &str,
        cluster_settings: &str,
        west_options: Options,
    ) -> anyhow::Result<Self> {
        Self::launch(routes, cluster_settings, west_options, true, &[])
    }

    /// [`Fleet::start`] with MCA reading its configuration as injected sidecars do
    /// (`--config-restricted`).
    pub fn start_restricted(routes: &str) -> anyhow::Result<Self> {
        Self::launch(
            routes,
            "",
            Options::default(),
            true,
            &["--config-restricted"],
        )
    }

    /// Starts MCA with `--config-optional` and no `mca.yaml` yet (as a pod whose namespace
    /// has no routing published yet); returns the fleet and the configuration for `routes`,
    /// to be written later.
    pub fn start_before_config(routes: &str) -> anyhow::Result<(Self, String)> {
        let fleet = Self::launch(routes, "", Options::default(), false, &[])?;
        let text = config(&fleet.east, &fleet.west, "", routes);
        Ok((fleet, text))
    }

    fn launch(
        routes: &str,
        cluster_settings: &str,
        west_options: Options,
        config_now: bool,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let pod = Pod::new()?;
        let local = ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
        local.state().pods.insert(NAMESPACE, "web");
        let east = ApiServer::start(pod.listen("127.0.0.1:0")?, EAST_TOKEN, &[])?;
        let west =
            ApiServer::start_with(pod.listen("127.0.0.1:0")?, WEST_TOKEN, &[], west_options)?;
        let dir = pod.dir();
        std::fs::write(dir.join("east-ca.crt"), east.ca_pem())?;
        std::fs::write(dir.join("west-ca.crt"), west.ca_pem())?;
        std::fs::write(dir.join("west-token"), WEST_TOKEN)?;
        let path = dir.join("mca.yaml");
        let mut args = vec!["--config", path.to_str().expect("UTF-8")];
        if config_now {
            std::fs::write(&path, config(&east, &west, cluster_settings, routes))?;
        } else {
            args.push("--config-optional");
        }
        args.extend_from_slice(extra_args);
        let mca = Mca::start(&pod, local.addr(), local.ca_pem(), &args)?;
        Ok(Self {
            env: Env {
                mca,
                apiserver: Some(local),
                pod,
            },
            east,
            west,
        })
    }

    /// The local cluster's server.
    pub fn local(&self) -> &ApiServer {
        self.env.apiserver()
    }

    /// Each cluster's name, server and token.
    pub fn clusters(&self) -> [(&'static str, &ApiServer, &'static str); 3] {
        [
            ("local", self.local(), REAL_TOKEN),
            ("east", &self.east, EAST_TOKEN),
            ("west", &self.west, WEST_TOKEN),
        ]
    }

    /// The targets (method and path) `server` received that contain `needle`; panics if any
    /// request it ever received did not carry its own `token`.
    pub fn received(server: &ApiServer, token: &str, needle: &str) -> Vec<String> {
        let requests = server.requests();
        for request in &requests {
            assert_eq!(
                request.header("authorization"),
                Some(format!("Bearer {token}").as_str()),
                "{} {} reached the server holding {token}",
                request.method,
                request.target
            );
        }
        requests
            .iter()
            .filter(|r| r.target.contains(needle))
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }

    /// Which clusters received a request whose target contains `needle`.
    pub fn where_went(&self, needle: &str) -> Vec<&'static str> {
        self.clusters()
            .into_iter()
            .filter(|(_, server, token)| !Self::received(server, token, needle).is_empty())
            .map(|(name, ..)| name)
            .collect()
    }

    /// kubectl as the application; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.env.kubectl(args)
    }

    /// The kube-rs client as the application; its stdout.
    pub fn kube_rs(&self, args: &[&str]) -> anyhow::Result<String> {
        let client = tests_binary("mca-kube-client");
        succeed(self.env.app_output(client, args)?, "mca-kube-client", args)
    }
}
