//! The consumer's provider file (`--clusterprofile-provider-file`, as cluster-inventory-api's
//! `access` package reads it): which access providers MCA can use, each with the client-go
//! exec plugin that gives a credential for it. [`Providers::plan`] matches a profile to the
//! first provider of the file that the profile offers and says exactly how its plugin is
//! run ([`Plan`]): command, arguments and environment (with the member's additions where the
//! provider allows them) and the `ExecCredential` request it reads from
//! `KUBERNETES_EXEC_INFO`.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::profile::{ARGS_EXTENSION, ClusterProfile, ENV_EXTENSION, EXEC_EXTENSION};

/// The exec credential API versions a plugin may speak.
const API_VERSIONS: [&str; 2] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

/// The provider file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Providers {
    /// In order of preference.
    pub providers: Vec<Provider>,
}

/// One provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    /// The access provider name it serves, as profiles list it.
    pub name: String,
    /// Its plugin.
    pub exec_config: ExecConfig,
    /// Whether a member's `additional-args` extension is appended (`Append`) or not
    /// (`Ignore`, the default).
    #[serde(default, rename = "profileSourcedCLIArgsPolicy")]
    pub profile_sourced_cli_args_policy: Option<String>,
    /// Whether a member's `additional-envs` extension is used: `Ignore` (the default),
    /// `AppendIfNotExists` (the file's variables win) or `Replace` (the member's win).
    #[serde(default)]
    pub profile_sourced_env_vars_policy: Option<String>,
}

/// A kubeconfig `user.exec`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecConfig {
    /// `client.authentication.k8s.io/v1` or `v1beta1`.
    pub api_version: String,
    /// The program (looked up in `PATH` when it has no `/`).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Variables added to the operator's environment.
    #[serde(default)]
    pub env: Option<Vec<EnvVar>>,
    /// Whether the request carries the member's cluster (`spec.cluster`).
    #[serde(default)]
    pub provide_cluster_info: bool,
    /// Only `Never` (or absent) works: the operator has no terminal.
    #[serde(default)]
    pub interactive_mode: Option<String>,
    /// Shown by client-go when the command is missing; unused here.
    #[serde(default)]
    pub install_hint: Option<String>,
}

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// How a member's plugin is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The access provider chosen (the file's name for it).
    pub provider: String,
    /// The member's API server, from that access provider.
    pub server: String,
    /// Its CA bundle, PEM.
    pub certificate_authority: Option<Vec<u8>>,
    /// The name in its certificate, when not the URL's host.
    pub tls_server_name: Option<String>,
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the operator's environment, in order.
    pub env: Vec<(String, String)>,
    /// The `ExecCredential` the plugin reads from `KUBERNETES_EXEC_INFO`.
    pub exec_info: Value,
    /// The API version its answer must have.
    pub api_version: String,
}

impl Providers {
    /// Reads a provider file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let providers: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for provider in &providers.providers {
            let exec = &provider.exec_config;
            let at = &provider.name;
            if !API_VERSIONS.contains(&exec.api_version.as_str()) {
                return Err(format!(
                    "provider {at}: execConfig.apiVersion {:?} is not one of {}",
                    exec.api_version,
                    API_VERSIONS.join(", ")
                ));
            }
            if exec.command.is_empty() {
                return Err(format!("provider {at}: execConfig.command is empty"));
            }
            if exec
                .interactive_mode
                .as_deref()
                .is_some_and(|mode| mode != "Never")
            {
                return Err(format!(
                    "provider {at}: interactiveMode must be Never: the operator has no terminal"
                ));
            }
            Self::args_policy(provider)?;
            Self::env_policy(provider)?;
        }
        Ok(providers)
    }

    fn args_policy(provider: &Provider) -> Result<bool, String> {
        match provider.profile_sourced_cli_args_policy.as_deref() {
            None | Some("" | "Ignore") => Ok(false),
            Some("Append") => Ok(true),
            Some(other) => Err(format!(
                "provider {}: profileSourcedCLIArgsPolicy {other:?} is not Append or Ignore",
                provider.name
            )),
        }
    }

    fn env_policy(provider: &Provider) -> Result<EnvPolicy, String> {
        match provider.profile_sourced_env_vars_policy.as_deref() {
            None | Some("" | "Ignore") => Ok(EnvPolicy::Ignore),
            Some("AppendIfNotExists") => Ok(EnvPolicy::AppendIfNotExists),
            Some("Replace") => Ok(EnvPolicy::Replace),
            Some(other) => Err(format!(
                "provider {}: profileSourcedEnvVarsPolicy {other:?} is not Ignore, \
                 AppendIfNotExists or Replace",
                provider.name
            )),
        }
    }

    /// How `profile`'s credential is obtained: the first provider of the file the profile
    /// offers, or why none can be used.
    pub fn plan(&self, profile: &ClusterProfile) -> Result<Plan, String> {
        let (provider, access) = self
            .providers
            .iter()
            .find_map(|p| profile.access_provider(&p.name).map(|a| (p, a)))
            .ok_or_else(|| {
                let offered: Vec<&str> = profile
                    .status
                    .access_providers
                    .iter()
                    .chain(&profile.status.credential_providers)
                    .map(|a| a.name.as_str())
                    .collect();
                let known: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "none of its access providers ({}) is in the provider file ({})",
                    list(&offered),
                    list(&known)
                )
            })?;
        let cluster = &access.cluster;
        if !cluster.server.starts_with("https://") {
            return Err(format!(
                "access provider {}: server {:?} is not https://: credentials are never sent \
                 in clear",
                access.name, cluster.server
            ));
        }
        if cluster.insecure_skip_tls_verify {
            return Err(format!(
                "access provider {}: insecure-skip-tls-verify: MCA sends credentials only to a \
                 server it verifies",
                access.name
            ));
        }
        if !cluster.proxy_url.is_empty() {
            return Err(format!(
                "access provider {}: proxy-url is not supported: MCA connects to API servers \
                 directly",
                access.name
            ));
        }
        let exec = &provider.exec_config;
        let mut args = exec.args.clone().unwrap_or_default();
        if Self::args_policy(provider)?
            && let Some(extra) = cluster.extension(ARGS_EXTENSION)
        {
            let extra: Vec<String> = serde_json::from_value(extra.clone())
                .map_err(|e| format!("extension {ARGS_EXTENSION} is not a list of strings: {e}"))?;
            args.extend(extra);
        }
        let mut env: Vec<(String, String)> = exec
            .env
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        let policy = Self::env_policy(provider)?;
        if policy != EnvPolicy::Ignore
            && let Some(extra) = cluster.extension(ENV_EXTENSION)
        {
            let extra: std::collections::BTreeMap<String, String> =
                serde_json::from_value(extra.clone()).map_err(|e| {
                    format!("extension {ENV_EXTENSION} is not a map of strings: {e}")
                })?;
            for (name, value) in extra {
                match env.iter_mut().find(|(n, _)| *n == name) {
                    Some(existing) if policy == EnvPolicy::Replace => existing.1 = value,
                    Some(_) => {}
                    None => env.push((name, value)),
                }
            }
        }
        let certificate_authority = cluster.certificate_authority()?;
        let mut spec = json!({"interactive": false});
        if exec.provide_cluster_info {
            let mut info = json!({"server": cluster.server});
            if let Some(ca) = &certificate_authority {
                info["certificate-authority-data"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(ca));
            }
            if !cluster.tls_server_name.is_empty() {
                info["tls-server-name"] = json!(cluster.tls_server_name);
            }
            if let Some(config) = cluster.extension(EXEC_EXTENSION) {
                info["config"] = config.clone();
            }
            spec["cluster"] = info;
        }
        Ok(Plan {
            provider: provider.name.clone(),
            server: cluster.server.clone(),
            certificate_authority,
            tls_server_name: (!cluster.tls_server_name.is_empty())
                .then(|| cluster.tls_server_name.clone()),
            command: exec.command.clone(),
            args,
            env,
            exec_info: json!({"apiVersion": exec.api_version, "kind": "ExecCredential", "spec": spec}),
            api_version: exec.api_version.clone(),
        })
    }
}

/// How a member's `additional-envs` meet the provider's own variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvPolicy {
    Ignore,
    AppendIfNotExists,
    Replace,
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"providers": [
        {"name": "token-reader", "execConfig": {"apiVersion": "client.authentication.k8s.io/v1",
            "command": "/bin/token-reader", "args": ["--audience", "mca"],
            "env": [{"name": "REGION", "value": "default"}, {"name": "MODE", "value": "file"}],
            "provideClusterInfo": true},
         "profileSourcedCLIArgsPolicy": "Append", "profileSourcedEnvVarsPolicy": "AppendIfNotExists"},
        {"name": "kubeconfig", "execConfig": {"apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubeconfig-plugin", "args": null, "env": null}}
    ]}"#;

    fn profile(providers: Value) -> ClusterProfile {
        serde_json::from_value(json!({
            "metadata": {"name": "east", "namespace": "fleet"},
            "status": {"accessProviders": providers},
        }))
        .unwrap()
    }

    fn east(extensions: Value) -> Value {
        json!({"server": "https://east:6443", "certificate-authority-data": "Q0E=",
               "tls-server-name": "api.east", "extensions": extensions})
    }

    #[test]
    fn the_first_provider_of_the_file_the_profile_offers_is_run_with_the_members_additions() {
        let providers = Providers::parse(FILE).unwrap();
        let profile = profile(json!([
            {"name": "kubeconfig", "cluster": {"server": "https://other:6443"}},
            {"name": "token-reader", "cluster": east(json!([
                {"name": EXEC_EXTENSION, "extension": {"audience": "east"}},
                {"name": ARGS_EXTENSION, "extension": ["--cluster", "east"]},
                {"name": ENV_EXTENSION, "extension": {"REGION": "east", "ZONE": "east-1"}},
            ]))},
        ]));
        let plan = providers.plan(&profile).unwrap();
        assert_eq!(
            plan.provider, "token-reader",
            "the file's order, not the profile's"
        );
        assert_eq!(plan.server, "https://east:6443");
        assert_eq!(plan.certificate_authority.as_deref(), Some(&b"CA"[..]));
        assert_eq!(plan.tls_server_name.as_deref(), Some("api.east"));
        assert_eq!(plan.args, ["--audience", "mca", "--cluster", "east"]);
        let env: Vec<(&str, &str)> = plan
            .env
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [("REGION", "default"), ("MODE", "file"), ("ZONE", "east-1")],
            "AppendIfNotExists: the file's own variables win"
        );
        assert_eq!(
            plan.exec_info,
            json!({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                   "spec": {"interactive": false, "cluster": {
                       "server": "https://east:6443", "certificate-authority-data": "Q0E=",
                       "tls-server-name": "api.east", "config": {"audience": "east"}}}})
        );
    }

    #[test]
    fn policies_decide_what_a_member_may_add() {
        let mut providers = Providers::parse(FILE).unwrap();
        providers.providers[0].profile_sourced_cli_args_policy = None;
        providers.providers[0].profile_sourced_env_vars_policy = Some("Replace".to_owned());
        providers.providers[0].exec_config.provide_cluster_info = false;
        let profile = profile(json!([{"name": "token-reader", "cluster": east(json!([
            {"name": ARGS_EXTENSION, "extension": ["--cluster", "east"]},
            {"name": ENV_EXTENSION, "extension": {"REGION": "east"}},
        ]))}]));
        let plan = providers.plan(&profile).unwrap();
        assert_eq!(plan.args, ["--audience", "mca"], "Ignore by default");
        assert_eq!(
            plan.env[0],
            ("REGION".to_owned(), "east".to_owned()),
            "Replace"
        );
        assert_eq!(
            plan.exec_info["spec"],
            json!({"interactive": false}),
            "no cluster info unless asked for"
        );
        providers.providers[0].profile_sourced_env_vars_policy = None;
        assert_eq!(providers.plan(&profile).unwrap().env[0].1, "default");
    }

    #[test]
    fn a_profile_that_cannot_be_used_says_why() {
        let providers = Providers::parse(FILE).unwrap();
        let why = |access: Value| providers.plan(&profile(access)).unwrap_err();
        assert_eq!(
            why(json!([{"name": "google", "cluster": {"server": "https://g"}}])),
            "none of its access providers (google) is in the provider file (token-reader, \
             kubeconfig)"
        );
        assert!(why(json!([])).starts_with("none of its access providers (none)"));
        let cluster = |extra: Value| {
            let mut cluster = east(json!([]));
            for (k, v) in extra.as_object().unwrap() {
                cluster[k] = v.clone();
            }
            json!([{"name": "kubeconfig", "cluster": cluster}])
        };
        assert!(why(cluster(json!({"server": "http://east"}))).contains("not https://"));
        assert!(
            why(cluster(json!({"insecure-skip-tls-verify": true})))
                .contains("insecure-skip-tls-verify")
        );
        assert!(why(cluster(json!({"proxy-url": "http://p:3128"}))).contains("proxy-url"));
        assert!(why(cluster(json!({"certificate-authority-data": "%%"}))).contains("not base64"));
        let mut append = Providers::parse(FILE).unwrap();
        append.providers.remove(1);
        let profile = profile(json!([{"name": "token-reader", "cluster": east(json!([
            {"name": ARGS_EXTENSION, "extension": "--not-a-list"},
        ]))}]));
        assert!(
            append
                .plan(&profile)
                .unwrap_err()
                .contains("not a list of strings")
        );
        // The deprecated field is matched too.
        let legacy: ClusterProfile = serde_json::from_value(json!({
            "metadata": {"name": "old", "namespace": "fleet"},
            "status": {"credentialProviders": [{"name": "kubeconfig", "cluster": east(json!([]))}]},
        }))
        .unwrap();
        let plan = providers.plan(&legacy).unwrap();
        assert_eq!(plan.api_version, "client.authentication.k8s.io/v1beta1");
        assert_eq!(plan.command, "kubeconfig-plugin");
        assert!(plan.args.is_empty() && plan.env.is_empty());
    }

    #[test]
    fn a_provider_file_is_checked_when_read() {
        let file =
            |provider: Value| Providers::parse(&json!({"providers": [provider]}).to_string());
        let exec = |extra: Value| {
            let mut exec = json!({"apiVersion": "client.authentication.k8s.io/v1", "command": "p"});
            for (k, v) in extra.as_object().unwrap() {
                exec[k] = v.clone();
            }
            json!({"name": "p", "execConfig": exec})
        };
        assert!(file(exec(json!({}))).is_ok());
        assert!(
            file(exec(
                json!({"apiVersion": "client.authentication.k8s.io/v1alpha1"})
            ))
            .unwrap_err()
            .contains("is not one of")
        );
        assert!(
            file(exec(json!({"command": ""})))
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            file(exec(json!({"interactiveMode": "Always"})))
                .unwrap_err()
                .contains("Never")
        );
        let mut policy = exec(json!({}));
        policy["profileSourcedCLIArgsPolicy"] = json!("Prepend");
        assert!(file(policy).unwrap_err().contains("Prepend"));
        let mut policy = exec(json!({}));
        policy["profileSourcedEnvVarsPolicy"] = json!("Merge");
        assert!(file(policy).unwrap_err().contains("Merge"));
        assert!(Providers::parse("{\"providers\": [], \"extra\": 1}").is_err());
        assert!(Providers::parse("not json").is_err());
    }
}
