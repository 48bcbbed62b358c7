//! Running a member's credential plugin ([`Plan`]) with client-go's exec protocol: the
//! request in `KUBERNETES_EXEC_INFO`, no terminal, and an `ExecCredential` on stdout with a
//! token or a client certificate and, optionally, when it expires.
//!
//! What the plugin prints is a credential: no error here quotes it, nor its stderr (which
//! plugins fill with whatever they like), so nothing of it reaches a log line, an event or a
//! status message. A plugin that fails, hangs past [`TIMEOUT`], prints more than
//! [`MAX_OUTPUT`] or prints no credential gives an error and no credential at all.

use std::{process::Stdio, time::Duration};

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;

use super::provider::Plan;

/// How long a plugin may run.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The most a plugin may print on stdout.
pub const MAX_OUTPUT: u64 = 1 << 20;

/// A member's credential.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A bearer token.
    Token(String),
    /// A client certificate and its key, PEM.
    Certificate {
        /// The certificate chain.
        certificate: Vec<u8>,
        /// Its key.
        key: Vec<u8>,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Token(_) => "Token(..)",
            Self::Certificate { .. } => "Certificate(..)",
        })
    }
}

/// A credential and until when it is good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// What to send.
    pub secret: Secret,
    /// `expirationTimestamp`, if the plugin gave one.
    pub expires: Option<Timestamp>,
}

/// Why no credential came of a plugin run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// It could not be started.
    #[error("running {command}: {reason}")]
    Start {
        /// The command.
        command: String,
        /// The operating system's reason.
        reason: String,
    },
    /// It ran past [`TIMEOUT`].
    #[error("{command} did not finish within {}s", TIMEOUT.as_secs())]
    Timeout {
        /// The command.
        command: String,
    },
    /// It exited with a failure.
    #[error("{command} failed ({status})")]
    Failed {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
    },
    /// It printed something that is not a usable `ExecCredential`.
    #[error("{command} printed no usable ExecCredential: {reason}")]
    Output {
        /// The command.
        command: String,
        /// What was wrong (never the output itself).
        reason: String,
    },
}

/// Runs `plan`'s plugin.
pub async fn run(plan: &Plan) -> Result<Credential, Error> {
    let command = plan.command.clone();
    let mut child = tokio::process::Command::new(&plan.command)
        .args(&plan.args)
        .envs(plan.env.iter().map(|(n, v)| (n, v)))
        .env("KUBERNETES_EXEC_INFO", plan.exec_info.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| Error::Start {
            command: command.clone(),
            reason: error.to_string(),
        })?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let finished = async {
        let mut output = Vec::new();
        // One byte past the bound tells a full bound from too much.
        (&mut stdout)
            .take(MAX_OUTPUT + 1)
            .read_to_end(&mut output)
            .await?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, output))
    };
    let (status, output) = tokio::time::timeout(TIMEOUT, finished)
        .await
        .map_err(|_| Error::Timeout {
            command: command.clone(),
        })?
        .map_err(|error| Error::Start {
            command: command.clone(),
            reason: error.to_string(),
        })?;
    if !status.success() {
        return Err(Error::Failed {
            command,
            status: status.to_string(),
        });
    }
    if output.len() as u64 > MAX_OUTPUT {
        return Err(Error::Output {
            command,
            reason: format!("more than {MAX_OUTPUT} bytes"),
        });
    }
    parse(&output, &plan.api_version).map_err(|reason| Error::Output { command, reason })
}

/// `ExecCredential` as plugins print it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredential {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    status: Option<ExecStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecStatus {
    #[serde(default)]
    token: String,
    #[serde(default)]
    client_certificate_data: String,
    #[serde(default)]
    client_key_data: String,
    expiration_timestamp: Option<String>,
}

/// A plugin's stdout as a credential. The reasons name fields, never their values.
pub fn parse(output: &[u8], api_version: &str) -> Result<Credential, String> {
    if output.iter().all(u8::is_ascii_whitespace) {
        return Err("it printed nothing".to_owned());
    }
    let credential: ExecCredential = serde_json::from_slice(output).map_err(|error| {
        format!(
            "not an ExecCredential (JSON error at line {}, column {})",
            error.line(),
            error.column()
        )
    })?;
    if credential.kind != "ExecCredential" {
        return Err("kind is not ExecCredential".to_owned());
    }
    if credential.api_version != api_version {
        return Err(format!(
            "apiVersion is not {api_version}, which it was asked for"
        ));
    }
    let status = credential.status.ok_or("it has no status")?;
    let token = !status.token.is_empty();
    let certificate =
        !status.client_certificate_data.is_empty() || !status.client_key_data.is_empty();
    let secret = match (token, certificate) {
        (true, true) => {
            return Err("it has both a token and a client certificate: MCA sends one".to_owned());
        }
        (false, false) => return Err("it has neither a token nor a client certificate".to_owned()),
        (true, false) => Secret::Token(status.token),
        (false, true) => {
            if status.client_certificate_data.is_empty() || status.client_key_data.is_empty() {
                return Err("clientCertificateData and clientKeyData go together".to_owned());
            }
            Secret::Certificate {
                certificate: status.client_certificate_data.into_bytes(),
                key: status.client_key_data.into_bytes(),
            }
        }
    };
    let expires = status
        .expiration_timestamp
        .map(|text| {
            text.parse::<Timestamp>()
                .map_err(|_| "expirationTimestamp is not an RFC 3339 time".to_owned())
        })
        .transpose()?;
    Ok(Credential { secret, expires })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use serde_json::json;

    use super::*;

    const V1: &str = "client.authentication.k8s.io/v1";

    #[test]
    fn a_token_or_a_certificate_with_its_expiry() {
        let token = parse(
            br#"{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                 "status": {"token": "s3cret", "expirationTimestamp": "2026-12-02T10:00:00Z"}}"#,
            V1,
        )
        .unwrap();
        assert_eq!(token.secret, Secret::Token("s3cret".to_owned()));
        assert_eq!(token.expires, Some("2026-12-02T10:00:00Z".parse().unwrap()));
        assert!(!format!("{token:?}").contains("s3cret"), "{token:?}");
        let certificate = parse(
            br#"{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                 "status": {"clientCertificateData": "CERT", "clientKeyData": "KEY"}}"#,
            V1,
        )
        .unwrap();
        assert_eq!(
            certificate.secret,
            Secret::Certificate {
                certificate: b"CERT".to_vec(),
                key: b"KEY".to_vec()
            }
        );
        assert_eq!(certificate.expires, None);
    }

    #[test]
    fn a_bad_answer_is_refused_without_quoting_it() {
        let answer = |status: serde_json::Value| {
            json!({"apiVersion": V1, "kind": "ExecCredential", "status": status}).to_string()
        };
        let cases = [
            (String::new(), "it printed nothing"),
            ("\n ".to_owned(), "it printed nothing"),
            ("token: s3cret".to_owned(), "not an ExecCredential"),
            (
                json!({"apiVersion": V1, "kind": "Other", "status": {"token": "s3cret"}}).to_string(),
                "kind is not ExecCredential",
            ),
            (
                json!({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                       "status": {"token": "s3cret"}})
                .to_string(),
                "apiVersion is not client.authentication.k8s.io/v1",
            ),
            (
                json!({"apiVersion": V1, "kind": "ExecCredential"}).to_string(),
                "it has no status",
            ),
            (answer(json!({})), "neither a token nor a client certificate"),
            (
                answer(json!({"token": "s3cret", "clientCertificateData": "C", "clientKeyData": "K"})),
                "both",
            ),
            (answer(json!({"clientCertificateData": "s3cret"})), "go together"),
            (
                answer(json!({"token": "s3cret", "expirationTimestamp": "tomorrow s3cret"})),
                "expirationTimestamp is not an RFC 3339 time",
            ),
        ];
        for (output, want) in cases {
            let why = parse(output.as_bytes(), V1).unwrap_err();
            assert!(why.contains(want), "{output:?}: {why}");
            assert!(!why.contains("s3cret"), "{why}");
        }
    }

    fn plan(script: &str) -> (tempfile::TempDir, Plan) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plan = Plan {
            provider: "p".to_owned(),
            server: "https://east:6443".to_owned(),
            certificate_authority: None,
            tls_server_name: None,
            command: path.to_str().unwrap().to_owned(),
            args: vec!["--cluster".to_owned(), "east".to_owned()],
            env: vec![("REGION".to_owned(), "east".to_owned())],
            exec_info: json!({"apiVersion": V1, "kind": "ExecCredential",
                              "spec": {"interactive": false, "cluster": {"server": "https://east:6443"}}}),
            api_version: V1.to_owned(),
        };
        (dir, plan)
    }

    #[tokio::test]
    async fn the_plugin_gets_its_arguments_environment_and_request() {
        // The token is made of what the plugin was given, so the test sees all three.
        let (_dir, plan) = plan(
            r#"server=$(printf '%s' "$KUBERNETES_EXEC_INFO" | sed 's/.*"server":"\([^"]*\)".*/\1/')
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s|%s|%s"}}' "$*" "$REGION" "$server""#,
        );
        let credential = run(&plan).await.unwrap();
        assert_eq!(
            credential.secret,
            Secret::Token("--cluster east|east|https://east:6443".to_owned())
        );
    }

    #[tokio::test]
    async fn a_failing_silent_or_endless_plugin_gives_no_credential_and_no_output() {
        let (_dir, failing) = plan("echo s3cret; echo s3cret >&2; exit 3");
        let error = run(&failing).await.unwrap_err();
        assert!(matches!(error, Error::Failed { .. }), "{error}");
        assert!(error.to_string().contains("exit status: 3"), "{error}");
        assert!(!error.to_string().contains("s3cret"));
        let (_dir, silent) = plan("exit 0");
        let error = run(&silent).await.unwrap_err();
        assert!(error.to_string().contains("printed nothing"), "{error}");
        let (_dir, mut missing) = plan("");
        missing.command = "/nonexistent/plugin".to_owned();
        assert!(matches!(
            run(&missing).await.unwrap_err(),
            Error::Start { .. }
        ));
        let (_dir, flood) = plan("head -c 1100000 /dev/zero");
        assert!(
            run(&flood)
                .await
                .unwrap_err()
                .to_string()
                .contains("more than")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_plugin_that_hangs_is_killed() {
        let (_dir, hanging) = plan("exec sleep 600");
        let error = run(&hanging).await.unwrap_err();
        assert_eq!(
            error,
            Error::Timeout {
                command: hanging.command.clone()
            }
        );
    }
}
