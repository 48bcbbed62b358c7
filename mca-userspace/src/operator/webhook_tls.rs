//! The webhook's serving certificate and the webhook configuration's `caBundle`, owned by the
//! operator: a CA of its own (ten years; its key only in the Secret `<secret>-ca`, which the
//! webhook never mounts) signs a serving certificate for the webhook Service (90 days, in the
//! `kubernetes.io/tls` Secret the webhook mounts and reloads), renewed once two thirds of its
//! life have passed; the MutatingWebhookConfiguration's entries pointing at the Service get
//! the CA as their `caBundle`.
//!
//! When the certificate was issued and for which names is kept in annotations on its
//! Secret, so checking needs no certificate parser.

use std::time::Duration;

use k8s_openapi::{
    ByteString,
    api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Secret},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use super::reconcile::apply_secret;

/// The serving certificate's life.
const LEAF_LIFE: Duration = Duration::from_secs(90 * 24 * 3600);
/// The CA's life.
const CA_LIFE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Annotation: when the serving certificate stops being valid (RFC 3339).
const NOT_AFTER: &str = "mca.io/not-after";
/// Annotation: when it was issued.
const NOT_BEFORE: &str = "mca.io/not-before";
/// Annotation: the names it is for, comma-separated.
const NAMES: &str = "mca.io/names";

/// Why the certificate could not be kept current.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused a read or write.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// Generating a key or certificate failed.
    #[error("generating the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The MutatingWebhookConfiguration does not exist (yet: an install creates it after
    /// the operator's Deployment).
    #[error("no MutatingWebhookConfiguration {0} (yet)")]
    NoConfiguration(String),
    /// The CA Secret holds something unusable.
    #[error("Secret {0}: not a CA certificate and key")]
    BadCa(String),
}

/// Where the webhook lives.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Its namespace (the operator's).
    pub namespace: String,
    /// Its Service.
    pub service: String,
    /// The `kubernetes.io/tls` Secret it mounts.
    pub secret: String,
    /// The MutatingWebhookConfiguration.
    pub configuration: String,
}

impl Webhook {
    /// The DNS names the API server may dial the Service by.
    fn names(&self) -> Vec<String> {
        let (service, namespace) = (&self.service, &self.namespace);
        vec![
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ]
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// A new serving certificate was issued.
    pub issued: bool,
    /// Webhook entries whose `caBundle` was set.
    pub bundles_set: usize,
}

/// Makes sure the serving certificate is valid for long enough and for the right names, and
/// that the webhook configuration trusts its CA.
pub async fn ensure(client: &Client, webhook: &Webhook, now: Timestamp) -> Result<Outcome, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &webhook.namespace);
    let (ca_pem, issuer) = authority(&secrets, &format!("{}-ca", webhook.secret), now).await?;
    let current = secrets.get_opt(&webhook.secret).await?;
    let names = webhook.names();
    let issued = if needs_new(current.as_ref(), &names, now) {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.clone())?;
        params.not_before = to_offset(now);
        params.not_after = to_offset(after(now, LEAF_LIFE));
        let cert = params.signed_by(&key, &issuer)?;
        let annotations = [
            (NOT_BEFORE.to_owned(), now.to_string()),
            (NOT_AFTER.to_owned(), after(now, LEAF_LIFE).to_string()),
            (NAMES.to_owned(), names.join(",")),
        ];
        let data = [
            ("tls.crt", cert.pem()),
            ("tls.key", key.serialize_pem()),
            ("ca.crt", ca_pem.clone()),
        ];
        apply_secret(
            &secrets,
            &webhook.secret,
            "kubernetes.io/tls",
            pairs(&data),
            &annotations,
        )
        .await?;
        tracing::info!(secret = %webhook.secret, not_after = %after(now, LEAF_LIFE), "issued the webhook's serving certificate");
        true
    } else {
        false
    };
    let bundles_set = set_ca_bundle(client, webhook, &ca_pem).await?;
    Ok(Outcome {
        issued,
        bundles_set,
    })
}

/// Whether the serving certificate is missing, for other names, or past two thirds of its
/// life.
fn needs_new(secret: Option<&Secret>, names: &[String], now: Timestamp) -> bool {
    let Some(secret) = secret else {
        return true;
    };
    let annotation = |key| secret.metadata.annotations.as_ref()?.get(key);
    let time = |key| annotation(key)?.parse::<Timestamp>().ok();
    let has_data = secret
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key("tls.crt") && d.contains_key("tls.key"));
    let (Some(not_before), Some(not_after)) = (time(NOT_BEFORE), time(NOT_AFTER)) else {
        return true;
    };
    let life = not_after.as_second() - not_before.as_second();
    let renew_at = not_before.as_second() + life * 2 / 3;
    !has_data || annotation(NAMES) != Some(&names.join(",")) || now.as_second() >= renew_at
}

/// The CA from its Secret, created on first use.
async fn authority(
    secrets: &Api<Secret>,
    name: &str,
    now: Timestamp,
) -> Result<(String, Issuer<'static, KeyPair>), Error> {
    if let Some(secret) = secrets.get_opt(name).await? {
        let field = |key: &str| {
            let data = secret.data.as_ref()?.get(key)?;
            String::from_utf8(data.0.clone()).ok()
        };
        let (Some(cert), Some(key)) = (field("ca.crt"), field("ca.key")) else {
            return Err(Error::BadCa(name.to_owned()));
        };
        let key = KeyPair::from_pem(&key).map_err(|_| Error::BadCa(name.to_owned()))?;
        return Ok((cert, Issuer::new(ca_params(now)?, key)));
    }
    let key = KeyPair::generate()?;
    let params = ca_params(now)?;
    let cert = params.self_signed(&key)?;
    let data = [("ca.crt", cert.pem()), ("ca.key", key.serialize_pem())];
    apply_secret(secrets, name, "Opaque", pairs(&data), &[]).await?;
    tracing::info!(secret = name, "created the webhook's CA");
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// Sets `caBundle` on the configuration's entries that call the webhook's Service; how many
/// changed.
async fn set_ca_bundle(client: &Client, webhook: &Webhook, ca_pem: &str) -> Result<usize, Error> {
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(configuration) = configurations.get_opt(&webhook.configuration).await? else {
        return Err(Error::NoConfiguration(webhook.configuration.clone()));
    };
    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    let changed: Vec<&str> = configuration
        .webhooks
        .iter()
        .flatten()
        .filter(|entry| {
            let ours = entry.client_config.service.as_ref().is_some_and(|service| {
                service.name == webhook.service && service.namespace == webhook.namespace
            });
            ours && entry.client_config.ca_bundle.as_ref() != Some(&bundle)
        })
        .map(|entry| entry.name.as_str())
        .collect();
    if !changed.is_empty() {
        // Only the caBundle of those entries (webhooks merge by name), with the
        // resourceVersion read: a concurrent change makes it fail with a conflict (and the
        // next round tries again) rather than be overwritten.
        let entries: Vec<_> = changed
            .iter()
            .map(|name| serde_json::json!({"name": name, "clientConfig": {"caBundle": bundle}}))
            .collect();
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": configuration.metadata.resource_version},
            "webhooks": entries,
        });
        configurations
            .patch(
                &webhook.configuration,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await?;
        tracing::info!(configuration = %webhook.configuration, entries = changed.len(), "set the webhook's caBundle");
    }
    Ok(changed.len())
}

/// PEM files as Secret data.
fn pairs<'a>(files: &'a [(&'a str, String)]) -> impl Iterator<Item = (&'a str, &'a [u8])> {
    files.iter().map(|(key, pem)| (*key, pem.as_bytes()))
}

/// `time + life`.
fn after(time: Timestamp, life: Duration) -> Timestamp {
    let seconds = i64::try_from(life.as_secs()).expect("lives fit");
    Timestamp::from_second(time.as_second() + seconds).expect("within jiff's range")
}

/// `time` as rcgen's validity bounds want it.
fn to_offset(time: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(time.as_second()).expect("a valid time")
}

/// The CA's parameters: its name is what leaves name as their issuer, so the issuer can be
/// rebuilt from the stored key.
fn ca_params(now: Timestamp) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mca-webhook-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.not_before = to_offset(now);
    params.not_after = to_offset(after(now, CA_LIFE));
    Ok(params)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::Method;
    use kube::api::ObjectMeta;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
    use serde_json::{Value, json};

    use super::*;
    use crate::operator::mock::api;

    const SECRETS: &str = "/api/v1/namespaces/mca-system/secrets";
    const CONFIGURATION: &str =
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mca";

    fn webhook() -> Webhook {
        Webhook {
            namespace: "mca-system".to_owned(),
            service: "mca-webhook".to_owned(),
            secret: "mca-webhook-tls".to_owned(),
            configuration: "mca".to_owned(),
        }
    }

    fn configuration() -> Value {
        let entry = |name: &str, service: &str| {
            json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                   "clientConfig": {"service": {"name": service, "namespace": "mca-system",
                                                "path": "/inject/namespace"}}})
        };
        json!({"apiVersion": "admissionregistration.k8s.io/v1",
               "kind": "MutatingWebhookConfiguration",
               "metadata": {"name": "mca", "resourceVersion": "7"},
               "webhooks": [entry("namespace.mca.io", "mca-webhook"),
                            entry("someone-else.example", "other")]})
    }

    fn secret_data(state: &super::super::mock::State, name: &str, key: &str) -> String {
        use base64::Engine as _;
        let value = &state.objects[&format!("{SECRETS}/{name}")]["data"][key];
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("base64"))
            .expect("base64");
        String::from_utf8(bytes).expect("PEM")
    }

    /// A TLS handshake in memory: a client trusting `ca` connects to a server presenting
    /// `cert` and `key`, by the webhook's Service name.
    fn handshake(ca: &str, cert: &str, key: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                chain,
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )?;
        let name = ServerName::try_from("mca-webhook.mca-system.svc").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..10 {
            let mut buffer = Vec::new();
            client.write_tls(&mut buffer).unwrap();
            server.read_tls(&mut buffer.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut buffer = Vec::new();
            server.write_tls(&mut buffer).unwrap();
            client.read_tls(&mut buffer.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[tokio::test]
    async fn a_ca_and_a_serving_certificate_are_made_and_the_configuration_trusts_them() {
        let (client, state) = api([(CONFIGURATION.to_owned(), configuration())]);
        let now = Timestamp::now();
        let outcome = ensure(&client, &webhook(), now).await.unwrap();
        assert_eq!(
            outcome,
            Outcome {
                issued: true,
                bundles_set: 1
            }
        );
        let first_cert = {
            let state = state.lock().unwrap();
            let ca = secret_data(&state, "mca-webhook-tls-ca", "ca.crt");
            let cert = secret_data(&state, "mca-webhook-tls", "tls.crt");
            let key = secret_data(&state, "mca-webhook-tls", "tls.key");
            assert_eq!(secret_data(&state, "mca-webhook-tls", "ca.crt"), ca);
            handshake(&ca, &cert, &key).expect("the CA vouches for the serving certificate");
            // The CA key stays out of the Secret the webhook mounts.
            let tls = &state.objects[&format!("{SECRETS}/mca-webhook-tls")];
            assert!(tls["data"].get("ca.key").is_none());
            assert_eq!(tls["type"], "kubernetes.io/tls");
            let webhooks = &state.objects[CONFIGURATION]["webhooks"];
            assert!(webhooks[0]["clientConfig"]["caBundle"].is_string());
            assert_eq!(webhooks[0]["sideEffects"], "None", "the entry is kept");
            assert_eq!(webhooks[1]["name"], "someone-else.example");
            assert!(
                webhooks[1]["clientConfig"].get("caBundle").is_none(),
                "not ours"
            );
            // Written by a patch of the caBundle alone, conditional on the version read.
            let (method, _, patch) = state.seen.last().unwrap();
            assert_eq!(method, Method::PATCH);
            assert_eq!(patch["metadata"]["resourceVersion"], "7");
            assert_eq!(patch["webhooks"].as_array().unwrap().len(), 1);
            cert
        };

        // A day later: nothing to do.
        let later = after(now, Duration::from_secs(24 * 3600));
        let outcome = ensure(&client, &webhook(), later).await.unwrap();
        assert_eq!(
            outcome,
            Outcome {
                issued: false,
                bundles_set: 0
            }
        );

        // Past two thirds of its life: renewed, by the same CA (rebuilt from its Secret).
        let late = after(now, Duration::from_secs(61 * 24 * 3600));
        let outcome = ensure(&client, &webhook(), late).await.unwrap();
        assert!(outcome.issued);
        let state = state.lock().unwrap();
        let ca = secret_data(&state, "mca-webhook-tls-ca", "ca.crt");
        let cert = secret_data(&state, "mca-webhook-tls", "tls.crt");
        let key = secret_data(&state, "mca-webhook-tls", "tls.key");
        assert_ne!(cert, first_cert);
        assert!(!key.is_empty());
        // Valid from `late` on: verified as of then.
        verify_at(&ca, &cert, late).expect("the same CA vouches for the renewed certificate");
        assert!(
            verify_at(&ca, &cert, now).is_err(),
            "not valid before it was issued"
        );
    }

    #[tokio::test]
    async fn a_missing_configuration_is_an_error_to_retry_but_the_certificate_is_issued() {
        let (client, state) = api([]);
        let error = ensure(&client, &webhook(), Timestamp::now())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::NoConfiguration(ref name) if name == "mca"));
        // The webhook can start serving meanwhile.
        let state = state.lock().unwrap();
        assert!(!secret_data(&state, "mca-webhook-tls", "tls.crt").is_empty());
    }

    /// Verifies `cert` for the webhook's Service name against `ca`, as of `at`.
    fn verify_at(ca: &str, cert: &str, at: Timestamp) -> Result<(), rustls::Error> {
        use rustls::{client::danger::ServerCertVerifier as _, pki_types::UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let cert = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let name = ServerName::try_from("mca-webhook.mca-system.svc").unwrap();
        let seconds = u64::try_from(at.as_second()).unwrap();
        let time = UnixTime::since_unix_epoch(Duration::from_secs(seconds + 60));
        verifier
            .verify_server_cert(&cert, &[], &name, &[], time)
            .map(|_| ())
    }

    #[test]
    fn renewal_follows_age_and_names() {
        let now = Timestamp::now();
        let names = webhook().names();
        let secret = |issued: Timestamp, names: &str| Secret {
            metadata: ObjectMeta {
                annotations: Some(
                    [
                        (NOT_BEFORE.to_owned(), issued.to_string()),
                        (NOT_AFTER.to_owned(), after(issued, LEAF_LIFE).to_string()),
                        (NAMES.to_owned(), names.to_owned()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            data: Some(
                [
                    ("tls.crt".to_owned(), ByteString(b"c".to_vec())),
                    ("tls.key".to_owned(), ByteString(b"k".to_vec())),
                ]
                .into(),
            ),
            ..Secret::default()
        };
        let joined = names.join(",");
        assert!(!needs_new(Some(&secret(now, &joined)), &names, now));
        let days = |n: u64| Duration::from_secs(n * 24 * 3600);
        assert!(!needs_new(
            Some(&secret(now, &joined)),
            &names,
            after(now, days(59))
        ));
        assert!(needs_new(
            Some(&secret(now, &joined)),
            &names,
            after(now, days(60))
        ));
        assert!(needs_new(Some(&secret(now, "old.name")), &names, now));
        assert!(needs_new(None, &names, now));
    }
}
