//! A cluster's credentials: exactly one way to authenticate, files resolved beside the
//! configuration, what an injected sidecar may not use refused, and the result in kube's own
//! form, a kubeconfig.

use std::path::PathBuf;

use kube::config::{
    AuthInfo, Context, ExecConfig, ExecInteractiveMode, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};

use super::{Schema, check::Checker, file};
use crate::upstream::Source;

impl Checker<'_> {
    /// Refuses what `cluster` may not use under [`Schema::Restricted`].
    fn restricted(&mut self, cluster: &file::Cluster, line: u64, at: &str) {
        const WHY: &str =
            "not allowed in an injected sidecar's configuration (--config-restricted)";
        if cluster.exec.is_some() {
            self.problem(line, at, format!("exec: running a command is {WHY}"));
        }
        if cluster.kubeconfig.is_some() {
            self.problem(
                line,
                at,
                format!("kubeconfig: {WHY}; give server and credentials"),
            );
        }
        let files = [
            ("certificateAuthority", &cluster.certificate_authority),
            ("tokenFile", &cluster.token_file),
            ("clientCertificate", &cluster.client_certificate),
            ("clientKey", &cluster.client_key),
        ];
        for (field, file) in files {
            let Some(file) = file else { continue };
            let mut parts = file.components();
            let plain = matches!(
                (parts.next(), parts.next()),
                (Some(std::path::Component::Normal(_)), None)
            );
            if !plain {
                self.problem(
                    line,
                    at,
                    format!(
                        "{field} {:?}: only the name of a file beside the configuration is {}",
                        file.display(),
                        "allowed in an injected sidecar's configuration (--config-restricted)"
                    ),
                );
            }
        }
    }

    /// Where a cluster's kube configuration comes from.
    pub(super) fn source(
        &mut self,
        cluster: &file::Cluster,
        line: u64,
        at: &str,
    ) -> Option<Source> {
        if self.schema == Schema::Restricted {
            self.restricted(cluster, line, at);
        }
        let credentials: Vec<&str> = [
            ("token", cluster.token.is_some()),
            ("tokenFile", cluster.token_file.is_some()),
            (
                "clientCertificate",
                cluster.client_certificate.is_some() || cluster.client_key.is_some(),
            ),
            ("exec", cluster.exec.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();

        if let Some(kubeconfig) = &cluster.kubeconfig {
            let inline = cluster.server.is_some()
                || cluster.certificate_authority.is_some()
                || cluster.certificate_authority_data.is_some()
                || cluster.tls_server_name.is_some()
                || !credentials.is_empty();
            if inline {
                self.problem(
                    line,
                    at,
                    "kubeconfig gives the server and credentials: drop server, \
                     certificateAuthority*, tlsServerName and credentials, or drop kubeconfig",
                );
                return None;
            }
            return Some(Source::Kubeconfig {
                path: Some(self.base.join(&kubeconfig.path)),
                context: kubeconfig.context.clone(),
            });
        }

        let Some(server) = &cluster.server else {
            self.problem(line, at, "server is required (or kubeconfig)");
            return None;
        };
        match server.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {}
            Ok(uri) if uri.scheme_str() == Some("http") => {
                self.problem(
                    line,
                    at,
                    format!("server {server:?}: credentials are never sent in clear; use https"),
                );
            }
            _ => self.problem(
                line,
                at,
                format!("server {server:?} is not an https:// URL"),
            ),
        }
        if cluster.certificate_authority.is_some() && cluster.certificate_authority_data.is_some() {
            self.problem(
                line,
                at,
                "certificateAuthority and certificateAuthorityData are both set; keep one",
            );
        }
        match credentials.as_slice() {
            [_] => {}
            [] => self.problem(
                line,
                at,
                "no credentials: give token, tokenFile, clientCertificate with clientKey, \
                 exec, or kubeconfig",
            ),
            several => self.problem(
                line,
                at,
                format!(
                    "one kind of credentials, please: {} are all set",
                    several.join(", ")
                ),
            ),
        }
        if cluster.client_certificate.is_some() != cluster.client_key.is_some() {
            self.problem(line, at, "clientCertificate and clientKey go together");
        }

        let path = |file: &Option<PathBuf>| {
            file.as_ref()
                .map(|file| self.base.join(file).to_string_lossy().into_owned())
        };
        let kube_cluster = kube::config::Cluster {
            server: Some(server.clone()),
            certificate_authority: path(&cluster.certificate_authority),
            certificate_authority_data: cluster.certificate_authority_data.clone(),
            tls_server_name: cluster.tls_server_name.clone(),
            ..kube::config::Cluster::default()
        };
        let auth_info = AuthInfo {
            token: cluster.token.clone().map(Into::into),
            token_file: path(&cluster.token_file),
            client_certificate: path(&cluster.client_certificate),
            client_key: path(&cluster.client_key),
            exec: cluster.exec.as_ref().map(|exec| ExecConfig {
                api_version: Some(
                    exec.api_version
                        .clone()
                        .unwrap_or_else(|| "client.authentication.k8s.io/v1".to_owned()),
                ),
                command: Some(exec.command.clone()),
                args: Some(exec.args.clone()),
                // MCA is a daemon: a plugin that wants a terminal has none to ask.
                interactive_mode: Some(ExecInteractiveMode::Never),
                env: Some(
                    exec.env
                        .iter()
                        .map(|var| {
                            [
                                ("name".to_owned(), var.name.clone()),
                                ("value".to_owned(), var.value.clone()),
                            ]
                            .into()
                        })
                        .collect(),
                ),
                ..ExecConfig::default()
            }),
            ..AuthInfo::default()
        };
        Some(Source::Inline(Box::new(single_context_kubeconfig(
            &cluster.name,
            kube_cluster,
            auth_info,
        ))))
    }
}

/// A kubeconfig holding one cluster, one user and one current context, all named `name`.
fn single_context_kubeconfig(
    name: &str,
    cluster: kube::config::Cluster,
    auth_info: AuthInfo,
) -> Kubeconfig {
    Kubeconfig {
        clusters: vec![NamedCluster {
            name: name.to_owned(),
            cluster: Some(cluster),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: name.to_owned(),
            auth_info: Some(auth_info),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: name.to_owned(),
            context: Some(Context {
                cluster: name.to_owned(),
                user: Some(name.to_owned()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(name.to_owned()),
        ..Kubeconfig::default()
    }
}
