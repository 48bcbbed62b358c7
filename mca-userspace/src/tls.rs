//! MCA's own certificate authority and the serving certificate that applications see.
//!
//! The application verifies MCA with the `ca.crt` of its (fake) ServiceAccount, so MCA must be
//! its own CA. The CA key is generated at start and lives only in this process: it is never
//! written anywhere, so nothing outside MCA can mint certificates the application trusts.
//!
//! The serving (leaf) certificate is short-lived and renewed in place by [`ServingCert::renew`]
//! through a [`ResolvesServerCert`] that always hands out the newest one, so renewal needs no
//! restart and connections in flight keep the certificate they started with.

use std::{
    net::IpAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use time::OffsetDateTime;

/// How far back `notBefore` is set, so that a client whose clock is slightly behind MCA's still
/// accepts a certificate minted a moment ago.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The CA outlives any realistic sidecar lifetime: a restarted MCA makes a new one anyway.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Errors while minting certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused the parameters or failed to sign.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls could not use the generated key.
    #[error("loading the generated key into rustls: {0}")]
    Key(#[from] rustls::Error),
    /// A `--extra-san` value is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),
}

/// The names and addresses a client may dial to reach the API server; every one of them must be
/// in MCA's serving certificate or the client's hostname verification fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectNames {
    /// DNS names, most specific last.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
}

impl SubjectNames {
    /// The standard set: loopback, the `kubernetes` Service names under `cluster_domain`, the
    /// real Service host MCA itself was given (an IP or a name), and any extras.
    pub fn for_cluster(
        cluster_domain: &str,
        service_host: Option<&str>,
        extra: &[String],
    ) -> Result<Self, Error> {
        let mut names = Self {
            dns: [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ]
            .map(String::from)
            .into(),
            ips: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ],
        };
        names.add(&format!("kubernetes.default.svc.{cluster_domain}"))?;
        for name in service_host
            .into_iter()
            .chain(extra.iter().map(String::as_str))
        {
            names.add(name)?;
        }
        Ok(names)
    }

    fn add(&mut self, name: &str) -> Result<(), Error> {
        // `KUBERNETES_SERVICE_HOST` holds a bracket-less IPv6 literal; tolerate brackets anyway.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if !self.ips.contains(&ip) {
                self.ips.push(ip);
            }
            return Ok(());
        }
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|label| !label.is_empty() && label.len() <= 63)
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*');
        if !valid {
            return Err(Error::InvalidSan(name.to_owned()));
        }
        let name = name.to_ascii_lowercase();
        if !self.dns.contains(&name) {
            self.dns.push(name);
        }
        Ok(())
    }

    fn to_san_types(&self) -> Result<Vec<SanType>, Error> {
        let mut sans = Vec::with_capacity(self.dns.len() + self.ips.len());
        for name in &self.dns {
            sans.push(SanType::DnsName(name.as_str().try_into()?));
        }
        sans.extend(self.ips.iter().copied().map(SanType::IpAddress));
        Ok(sans)
    }
}

/// MCA's certificate authority. The key never leaves this struct.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl CertAuthority {
    /// Generates a fresh CA (ECDSA P-256).
    pub fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("mca-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate in PEM, as written to the fake ServiceAccount's `ca.crt`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Mints a serving certificate for `names`, valid for `validity` from now.
    fn issue(&self, names: &SubjectNames, validity: Duration) -> Result<Leaf, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("mca");
        params.subject_alt_names = names.to_san_types()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)?;
        let key = CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing_key);
        Ok(Leaf {
            key: Arc::new(key),
            not_after: params.not_after,
        })
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mca");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
}

/// The current serving certificate, swapped in place on renewal.
pub struct ServingCert {
    authority: CertAuthority,
    names: SubjectNames,
    validity: Duration,
    current: RwLock<Leaf>,
}

/// A serving certificate with its key, and when it expires.
#[derive(Clone)]
struct Leaf {
    key: Arc<CertifiedKey>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("names", &self.names)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Issues the first serving certificate for `names` from `authority`.
    pub fn new(
        authority: CertAuthority,
        names: SubjectNames,
        validity: Duration,
    ) -> Result<Self, Error> {
        let first = authority.issue(&names, validity)?;
        Ok(Self {
            authority,
            names,
            validity,
            current: RwLock::new(first),
        })
    }

    /// The CA certificate (PEM) that verifies every certificate this hands out.
    pub fn ca_pem(&self) -> &str {
        self.authority.cert_pem()
    }

    /// When the certificate new handshakes get expires, in seconds since the Unix epoch.
    pub fn expires(&self) -> i64 {
        self.leaf().not_after.unix_timestamp()
    }

    fn leaf(&self) -> Leaf {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When to renew: after two thirds of the lifetime, so a failed renewal has time to retry.
    pub fn renew_interval(&self) -> Duration {
        self.validity * 2 / 3
    }

    /// Issues a new leaf and makes it the one new handshakes get.
    pub fn renew(&self) -> Result<(), Error> {
        let next = self.authority.issue(&self.names, self.validity)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    /// Renews forever, every [`Self::renew_interval`], calling `renewed` after each renewal;
    /// retries a failed renewal after a minute.
    pub async fn renew_periodically(self: Arc<Self>, mut renewed: impl FnMut() + Send) {
        let mut wait = self.renew_interval();
        loop {
            tokio::time::sleep(wait).await;
            wait = match self.renew() {
                Ok(()) => {
                    tracing::info!(
                        valid_for = ?self.validity,
                        "renewed the serving certificate"
                    );
                    renewed();
                    self.renew_interval()
                }
                Err(error) => {
                    tracing::error!(%error, "renewing the serving certificate failed; retrying");
                    Duration::from_secs(60).min(self.renew_interval())
                }
            };
        }
    }

    /// A rustls server configuration that serves the current certificate and offers HTTP/2 and
    /// HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> ServerConfig {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

#[derive(Debug)]
struct Resolver(Arc<ServingCert>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.leaf().key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_service_and_dedupe() {
        let names = SubjectNames::for_cluster(
            "cluster.local",
            Some("10.96.0.1"),
            &[
                "api.example.com".into(),
                "127.0.0.1".into(),
                "fd00::1".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            names.dns,
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "api.example.com"
            ]
        );
        assert_eq!(
            names.ips,
            ["127.0.0.1", "::1", "10.96.0.1", "fd00::1"].map(|s| s.parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn bad_san_is_rejected() {
        for bad in ["", "a..b", "spaces are bad", "x/y"] {
            assert!(
                SubjectNames::for_cluster("cluster.local", None, &[bad.into()]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn renewal_swaps_the_leaf() {
        let names = SubjectNames::for_cluster("cluster.local", None, &[]).unwrap();
        let cert = Arc::new(
            ServingCert::new(
                CertAuthority::generate().unwrap(),
                names,
                Duration::from_secs(60),
            )
            .unwrap(),
        );
        let before = cert.leaf().key.cert[0].clone();
        let first_expiry = cert.expires();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((now + 59..=now + 60).contains(&first_expiry));
        std::thread::sleep(Duration::from_millis(1100));
        cert.renew().unwrap();
        assert!(cert.expires() > first_expiry);
        let after = cert.leaf().key.cert[0].clone();
        assert_ne!(before, after);
        assert_eq!(cert.renew_interval(), Duration::from_secs(40));
    }
}
